#!/bin/sh
# Run once by the postgres image when its volume is first initialised: the role
# the service connects as (MFA_DATABASE_URL). It owns nothing, so it cannot
# disable the audit triggers; `mfa-codes db upgrade`, as the owner, grants it
# what it needs. On an existing volume, run the same statement by hand.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v app_password="$MFA_APP_DB_PASSWORD" <<'SQL'
CREATE ROLE mfa_app LOGIN PASSWORD :'app_password';
SQL
