#!/usr/bin/env node
// Herald from Node (@grpc/grpc-js with @grpc/proto-loader): subscribe to a
// user's notifications, create an event for that user, and print the
// notification when it arrives. The services are loaded from the
// repository's proto/ at run time (npm install in this directory first).
//
//   node examples/node/herald_example.js [127.0.0.1:50051] [API_KEY]
//
// With the logger's API keys on, the key needs the scopes events:write and
// notifications:subscribe (example-app-key of config/keys.example.json).

const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const target = process.argv[2] || "127.0.0.1:50051";
const apiKey = process.argv[3] || "";

const definition = protoLoader.loadSync("herald/v1/herald.proto", {
  includeDirs: [path.join(__dirname, "..", "..", "proto")],
  keepCase: true,
  enums: String,
  defaults: true,
  oneofs: true,
});
const herald = grpc.loadPackageDefinition(definition).herald.v1;
const credentials = grpc.credentials.createInsecure();
const logger = new herald.EventLogger(target, credentials);
const notifier = new herald.Notifier(target, credentials);
const metadata = new grpc.Metadata();
if (apiKey) metadata.set("authorization", `Bearer ${apiKey}`);

const user = "node-example";
const deadline = setTimeout(() => {
  console.error("no notification within 30 s");
  process.exit(1);
}, 30000);
let created = null; // the event's id once CreateEvent answered
const early = new Map(); // notifications that came before that answer

// A gRPC error ends the example with one line: the status code and the
// server's message, as the herald CLI says it.
function fail(err) {
  const code = Object.keys(grpc.status).find((name) => grpc.status[name] === err.code);
  console.error(`error: ${code}: ${err.details}`);
  process.exit(1);
}

function finish(event) {
  console.log(`notified: ${event.user_id}: ${event.description} (${event.status})`);
  clearTimeout(deadline);
  stream.cancel();
}

const stream = notifier.Subscribe({ user_id: user }, metadata);
stream.on("data", (message) => {
  // A new live stream says at once where it starts: then it is registered.
  if (message.kind === "heartbeat" && created === null) {
    created = "";
    logger.CreateEvent(
      { user_id: user, description: "Hello from Node", category: "example" },
      metadata,
      (err, response) => {
        if (err) fail(err);
        created = response.event.event_id;
        console.log(`created ${created} (${response.event.status})`);
        if (early.has(created)) finish(early.get(created));
      },
    );
  } else if (message.kind === "event") {
    if (message.event.event_id === created) finish(message.event);
    else early.set(message.event.event_id, message.event);
  }
});
stream.on("error", (err) => {
  if (err.code !== grpc.status.CANCELLED) fail(err);
  logger.close();
  notifier.close();
});
