# The AutoAudit API image. Official Bun image, pinned to the Bun version the project is
# developed and tested with (package.json / .ci/run).
ARG BUN_VERSION=1.4.5

# ── deps: production dependencies only, exactly as locked ───────────────────────────
FROM oven/bun:${BUN_VERSION} AS deps
WORKDIR /app
COPY package.json bun.lock ./
# --omit=optional drops the platform binaries of embedded-postgres and dbmate (about
# 90 MB): in this stack PostgreSQL runs in `db` and migrations in `migrate`. Their JS
# wrappers stay installed but are never started by the server.
RUN bun install --frozen-lockfile --production --omit=optional --ignore-scripts

# ── runtime: the dependencies, the API source and the migrations, run as `bun` ──────
FROM oven/bun:${BUN_VERSION} AS runtime
WORKDIR /app
ENV NODE_ENV=production
COPY --from=deps --chown=bun:bun /app/node_modules ./node_modules
COPY --chown=bun:bun package.json bun.lock tsconfig.json ./
COPY --chown=bun:bun api ./api
COPY --chown=bun:bun migrations ./migrations
# The image's unprivileged user (uid 1000); nothing here needs root.
USER bun
EXPOSE 8000
CMD ["bun", "api/src/server.ts"]
