# syntax=docker/dockerfile:1
# One image for every quiclb subcommand: `quiclb operator`, `quiclb dataplane`, `quiclb standalone`, `quiclb cid ...`.
#   docker build -t quiclb/quiclb:0.1.0 .
#   docker run --rm quiclb/quiclb:0.1.0 dataplane --help
# Runs as a non-root user (65532) and writes nothing outside its mounts, so it runs with a read-only root
# filesystem (the chart mounts /tmp, the TLS directory and the data plane's --state-dir).
ARG NODE_IMAGE=node:24-slim

# Compile the TypeScript sources (dist/).
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# --ignore-scripts: "prepare" would compile before the sources are copied, and the devDependency "node" (the
# Node binary for development machines) is not needed: the base image has Node 24.
RUN npm install --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY lib/ lib/
COPY cli/ cli/
COPY dataplane/ dataplane/
COPY examples/ examples/
COPY operator/ operator/
COPY proto/ proto/
RUN node node_modules/typescript/bin/tsc -p tsconfig.build.json

# The data plane's batched datagram I/O addon (native/quiclb_io.c; without it the data plane runs node:dgram),
# compiled against the base image's Node headers (/usr/local/include/node). The compiler stays in this stage.
FROM ${NODE_IMAGE} AS native
WORKDIR /src
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
COPY native/ native/
RUN node native/build.mjs --strict

# Runtime dependencies only, at the versions of package-lock.json. `npm install` rather than `npm ci`: the dev
# dependency @matrixai/quic lists per-platform packages the registry does not have, which npm ci's lock check
# rejects even with --omit=dev (as in .ci/run).
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm install --omit=dev --ignore-scripts --no-audit --no-fund \
    && npm cache clean --force

FROM ${NODE_IMAGE}
ENV NODE_ENV=production
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY --from=native /src/native/build ./native/build
COPY package.json ./
COPY bin/ ./bin/
USER 65532:65532
# The V8 flags the data plane's latency tail needs (dataplane/v8-flags.ts).
ENTRYPOINT ["node", "--max-semi-space-size=1", "--initial-old-space-size=64", "/app/bin/quiclb.js"]
CMD ["--help"]
