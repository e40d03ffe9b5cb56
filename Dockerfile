# syntax=docker/dockerfile:1
# Build stage: compile TypeScript with the dev dependencies, as documented (npm run build).
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
COPY scripts/build.mjs ./scripts/build.mjs
COPY src ./src
RUN npm ci --no-audit --no-fund --ignore-scripts \
 && npm run build

# Runtime stage: production dependencies only (no PostgreSQL binaries, no compiler).
FROM node:24-bookworm-slim
LABEL org.opencontainers.image.title="slotsync" \
      org.opencontainers.image.description="Keeps a PostgreSQL standby ready to take over logical replication: copies failover slots and keeps them in step, over SQL" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="0.2.0"
ENV NODE_ENV=production \
    SLOTSYNC_HOST=0.0.0.0 \
    SLOTSYNC_STATE_DIR=/var/lib/slotsync
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --ignore-scripts && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY openapi ./openapi
RUN mkdir -p /var/lib/slotsync && chown node:node /var/lib/slotsync
USER node
VOLUME ["/var/lib/slotsync"]
EXPOSE 8432
# Liveness over HTTP, or HTTPS when SLOTSYNC_TLS_CERT_FILE is set (loopback: the
# certificate names the service's public name, so it is not verified here).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["node", "-e", "require(process.env.SLOTSYNC_TLS_CERT_FILE?'https':'http').get({host:'127.0.0.1',port:process.env.SLOTSYNC_PORT||8432,path:'/health/live',rejectUnauthorized:false},r=>process.exit(r.statusCode===200?0:1)).on('error',()=>process.exit(1))"]
# Listening on 0.0.0.0 needs SLOTSYNC_API_TOKEN (the service refuses to start without it).
# Signals: node runs as PID 1 and slotsync handles SIGTERM/SIGINT (graceful stop) and SIGHUP
# (reload) itself, and spawns no child: no init is needed (`docker run --init` does no harm).
ENTRYPOINT ["node", "dist/cli/main.js"]
