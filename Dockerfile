# A static musl build of the job in a distroless image: the binary, the CA
# roots it carries inside itself, nothing else.
#
#   docker build -t postfinder-embeddings .

FROM rust:1-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl \
 && apt-get update && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src

# Dependencies first, in a layer of their own: it is rebuilt only when
# Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src/bin/embedding-standin \
 && echo 'fn main() {}' > src/main.rs \
 && echo 'fn main() {}' > src/bin/embedding-standin/main.rs \
 && cargo build --release --locked --target x86_64-unknown-linux-musl --bin postfinder-embeddings \
 && rm -rf src

COPY src ./src
RUN touch src/main.rs \
 && cargo build --release --locked --target x86_64-unknown-linux-musl --bin postfinder-embeddings

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/postfinder-embeddings /postfinder-embeddings
USER nonroot:nonroot
ENTRYPOINT ["/postfinder-embeddings"]
