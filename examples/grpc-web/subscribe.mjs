// Subscribes to one user's notifications over gRPC-Web, with Connect's
// gRPC-Web transport (the fetch API, as in a browser), and prints each
// message as a JSON line: `{"joined": cursor}` once the stream is open,
// then `{"cursor", "event_id", "user_id", "description"}` per notification.
//
//   HERALD_TOKEN=<user token> node subscribe.mjs <web url> <descriptor set> <user> [count]
//
// The descriptor set is Herald's contract compiled (`buf build -o`, or the
// one the logger serves by reflection); the messages are built from it at
// run time, so there is no generated code to keep in step.

import { readFileSync } from "node:fs";
import { Code, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";

const [url, descriptors, user, count = "1"] = process.argv.slice(2);
const token = process.env.HERALD_TOKEN;
if (!url || !descriptors || !user || !token) {
  console.error("usage: HERALD_TOKEN=<token> node subscribe.mjs <web url> <descriptor set> <user> [count]");
  process.exit(2);
}

const registry = createFileRegistry(
  fromBinary(FileDescriptorSetSchema, readFileSync(descriptors)),
);
const notifier = registry.getService("herald.v1.Notifier");
const transport = createGrpcWebTransport({
  baseUrl: url,
  useBinaryFormat: true,
  interceptors: [
    (next) => async (request) => {
      request.header.set("authorization", `Bearer ${token}`);
      return next(request);
    },
  ],
});
const client = createClient(notifier, transport);

let joined = false;
let received = 0;
try {
  for await (const message of client.subscribe({ userId: user })) {
    if (!joined) {
      joined = true;
      console.log(JSON.stringify({ joined: message.cursor }));
    }
    if (message.kind.case !== "event") continue;
    const event = message.kind.value;
    console.log(
      JSON.stringify({
        cursor: message.cursor,
        event_id: event.eventId,
        user_id: event.userId,
        description: event.description,
      }),
    );
    received += 1;
    if (received >= Number(count)) break;
  }
} catch (err) {
  // A refusal: its gRPC code and message, as the server sent them.
  console.log(JSON.stringify({ error: Code[err.code] ?? String(err.code), message: err.rawMessage ?? String(err) }));
  process.exit(1);
}
