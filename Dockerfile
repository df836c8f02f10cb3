# Builds every Herald binary; the runtime image runs herald-logger by default
# (override the command for herald-processor or the herald CLI).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --workspace --bins

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home herald
COPY --from=build /src/target/release/herald-logger /src/target/release/herald-processor /src/target/release/herald /usr/local/bin/
USER herald
ENV HERALD_LISTEN=0.0.0.0:50051
# gRPC; Prometheus metrics of the logger and of a processor.
EXPOSE 50051 9464 9465
CMD ["herald-logger"]
