# The three Sourcegram hosts in one image; docker-compose picks the binary.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p command-host -p projection-host -p query-host

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 sourcegram
COPY --from=build /src/target/release/command-host /src/target/release/projection-host /src/target/release/query-host /usr/local/bin/
USER sourcegram
EXPOSE 8081 8082 8083
CMD ["command-host"]
