# syntax=docker/dockerfile:1
# Build stage: compile TypeScript with the dev dependencies.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
COPY src ./src
RUN npm ci --no-audit --no-fund --ignore-scripts \
 && npx tsc -p tsconfig.json

# Runtime stage: production dependencies only (no PostgreSQL binaries, no compiler).
FROM node:20-bookworm-slim
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
ENTRYPOINT ["node", "dist/cli/main.js"]
