#!/bin/sh
# Patroni's post_bootstrap hook (run once, on the member that initialises the
# cluster; $1 is a superuser connection URL): the database and user of the
# inventory's pg_databases / pg_users, which pgbouncer's userlist serves.
set -e
psql "$1" -v ON_ERROR_STOP=1 -q \
  -c "CREATE ROLE test LOGIN PASSWORD 'test'" \
  -c "CREATE DATABASE test OWNER test"
