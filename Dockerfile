# syntax=docker/dockerfile:1
# The Tern image: `tern` (every role: mailbox, smtp, imap, pop3, admin, dev) and, when the
# workspace has it, `tern-operator`. Build from the repository root:
#   docker build -t tern:0.1.0 .
#   docker build --build-arg BINARIES=tern -t tern:0.1.0 .   # without the operator

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# checkov:skip=CKV_DOCKER_7:the tags are in the ARGs above, which checkov does not expand
# checkov:skip=CKV_DOCKER_2:no HEALTHCHECK: distroless has no shell or curl; Kubernetes probes GET /healthz and /readyz on :9095
FROM ${RUST_IMAGE} AS builder
# Packages (cargo -p names) to build; a name the workspace does not have is skipped, so the
# same Dockerfile works before and after a package exists.
ARG BINARIES="tern tern-operator"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    set -eu; \
    mkdir -p /out /data; \
    packages=$(cargo metadata --no-deps --format-version 1 --locked); \
    for bin in $BINARIES; do \
      if printf '%s' "$packages" | grep -q "\"name\":\"$bin\""; then \
        cargo build --release --locked -p "$bin" --bin "$bin"; \
        cp "target/release/$bin" /out/; \
      else \
        echo "skipping $bin: no such package in the workspace"; \
      fi; \
    done; \
    test -x /out/tern

FROM ${RUNTIME_IMAGE}
COPY --from=builder /out/ /usr/local/bin/
COPY --from=builder --chown=65532:65532 /data /var/lib/tern
# distroless's nonroot user (65532); the Helm chart runs every container as this user with a
# read-only root file system and writable volumes at /var/lib/tern and /tmp.
USER 65532:65532
WORKDIR /var/lib/tern
# Unprivileged ports: health and metrics, mailbox gRPC, SMTP (MX, submission, submissions),
# POP3, POP3S, IMAP, IMAPS. Listen addresses come from the config (--config / TERN_CONFIG).
EXPOSE 9095 50051 2525 5587 5465 1110 1995 1143 1993
ENTRYPOINT ["tern"]
CMD ["--help"]
