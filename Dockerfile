# Builds every Herald binary; the runtime image runs herald-logger by default
# (override the command for herald-processor or the herald CLI).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The dist profile: whole-program optimisation (fat LTO), slower to build and
# less CPU per event than --release (BENCHMARKS.md §30).
RUN cargo build --profile dist --locked --workspace --bins

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home herald
COPY --from=build /src/target/dist/herald-logger /src/target/dist/herald-processor /src/target/dist/herald /usr/local/bin/
USER herald
ENV HERALD_LISTEN=0.0.0.0:50051
# gRPC; Prometheus metrics of the logger and of a processor.
EXPOSE 50051 9464 9465
CMD ["herald-logger"]
