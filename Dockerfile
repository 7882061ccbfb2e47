# caje under LiteFS on Fly.io. LiteFS is PID 1: it mounts /litefs, joins the
# cluster (Consul lease), then runs the commands in litefs.yml, the last one
# being caje itself. Run as root: LiteFS needs FUSE (see the LiteFS docs).
#
# Node 22 (an LTS with security support; Node 20 reached end of life on
# 2026-04-30). The test suite runs on Node 20 and 22 (.ci/run).

# Dependencies in their own stage: better-sqlite3 may compile its native
# addon, which needs a toolchain the final image does not.
FROM node:22-slim AS deps
WORKDIR /app
RUN apt-get update -y \
 && apt-get install -y --no-install-recommends python3 make g++ ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
# tsx is a runtime dependency (caje runs its TypeScript directly); dev tools stay out.
RUN npm ci --omit=dev

FROM node:22-slim
# fuse3: LiteFS's FUSE mount. ca-certificates: TLS to Consul and to https origins.
# sqlite3: inspecting /litefs/manifest.db from `fly ssh console`.
RUN apt-get update -y \
 && apt-get install -y --no-install-recommends ca-certificates fuse3 sqlite3 \
 && rm -rf /var/lib/apt/lists/*
# 0.5 resolves to 0.5.14, LiteFS's last release (see docs/manifest-engines.md).
COPY --from=flyio/litefs:0.5 /usr/local/bin/litefs /usr/local/bin/litefs

WORKDIR /app
ENV NODE_ENV=production
COPY --from=deps /app/node_modules ./node_modules
COPY package.json package-lock.json tsconfig.json ./
COPY src ./src
COPY views ./views
COPY public ./public
# bin/caje starts Node on the bundle with caje's memory settings (litefs.yml runs it).
COPY bin ./bin
# The server runs from one esbuild bundle (dist/main.js): plain JavaScript, no loader at run time.
RUN npm run build
COPY litefs.yml /etc/litefs.yml

# 8080: public (Fly's proxy). 8081: internal routes, private network only.
EXPOSE 8080 8081
ENTRYPOINT ["litefs", "mount"]
