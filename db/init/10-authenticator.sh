#!/usr/bin/env bash
# Gives the `authenticator` role (PostgREST's and the API's login) its password from the
# environment. The migrations create that role without a password on purpose: passwords
# live only in the environment, never in SQL files.
#
# The postgres image runs this once, when it initialises an empty data volume, before the
# `migrate` service applies the migrations; their "create role if not exists" then keeps
# the role made here. Idempotent, so it is also the fix for an existing volume (a cluster
# created before this script, after `dbmate down`, or after AUTHENTICATOR_PASSWORD changed):
#   docker compose up -d db && docker compose exec db /docker-entrypoint-initdb.d/10-authenticator.sh
set -euo pipefail

: "${AUTHENTICATOR_PASSWORD:?is not set: copy .env.example to .env}"
if [ "${#AUTHENTICATOR_PASSWORD}" -lt 16 ]; then
  echo "10-authenticator.sh: AUTHENTICATOR_PASSWORD must be at least 16 characters" >&2
  exit 1
fi

# The password travels as a psql variable and is quoted by the server's format(%L), so no
# character in it can break out of the string literal. Attributes match the migration's.
psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet \
  --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-${POSTGRES_USER:-postgres}}" \
  --set=pw="$AUTHENTICATOR_PASSWORD" <<'SQL'
select case
  when exists (select from pg_roles where rolname = 'authenticator')
    then format('alter role authenticator with login password %L', :'pw')
  else format('create role authenticator with login noinherit password %L', :'pw')
end
\gexec
SQL
echo "10-authenticator.sh: role authenticator has its password from AUTHENTICATOR_PASSWORD"
