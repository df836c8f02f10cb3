#!/usr/bin/env python3
"""Herald from Python (grpcio): subscribe to a user's notifications, create
an event for that user, and print the notification when it arrives.

Stubs are generated from the repository's proto/ into a temporary directory
(pip install grpcio grpcio-tools). Usage:

    python3 examples/python/herald_example.py [127.0.0.1:50051] [API_KEY]

With the logger's API keys on, the key needs the scopes events:write and
notifications:subscribe (example-app-key of config/keys.example.json). A
gRPC error ends it with one line on stderr and exit status 1.
"""

import os
import subprocess
import sys
import tempfile

import grpc

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def generate_stubs(out):
    """Python modules for herald.proto (and google/rpc/status.proto) in `out`."""
    proto = os.path.join(ROOT, "proto")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto}", f"--python_out={out}",
         f"--grpc_python_out={out}", "herald/v1/herald.proto", "google/rpc/status.proto"],
        check=True)
    sys.path.insert(0, out)


def main():
    target = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"
    api_key = sys.argv[2] if len(sys.argv) > 2 else ""
    with tempfile.TemporaryDirectory() as out:
        generate_stubs(out)
        from herald.v1 import herald_pb2 as pb
        from herald.v1 import herald_pb2_grpc as rpc

        metadata = [("authorization", f"Bearer {api_key}")] if api_key else []
        with grpc.insecure_channel(target) as channel:
            logger = rpc.EventLoggerStub(channel)
            notifier = rpc.NotifierStub(channel)
            user = "python-example"
            stream = notifier.Subscribe(pb.SubscribeRequest(user_id=user), metadata=metadata,
                                        timeout=30)
            # A new live stream says at once where it starts: then it is registered.
            first = next(stream)
            assert first.WhichOneof("kind") == "heartbeat", first
            created = logger.CreateEvent(
                pb.CreateEventRequest(user_id=user, description="Hello from Python",
                                      category="example"),
                metadata=metadata)
            print(f"created {created.event.event_id} ({pb.EventStatus.Name(created.event.status)})")
            for message in stream:
                if message.WhichOneof("kind") == "event" \
                        and message.event.event_id == created.event.event_id:
                    print(f"notified: {message.event.user_id}: {message.event.description} "
                          f"({pb.EventStatus.Name(message.event.status)})")
                    stream.cancel()
                    return


if __name__ == "__main__":
    try:
        main()
    except grpc.RpcError as err:
        # One line: the status code and the server's message, as the herald CLI says it.
        sys.exit(f"error: {err.code().name}: {err.details()}")
