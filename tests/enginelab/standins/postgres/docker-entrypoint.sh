#!/usr/bin/env bash
# The parts of the official docker-entrypoint.sh that compose.yaml relies on:
# https://github.com/docker-library/postgres/blob/6edb0a8c4def/17/alpine3.23/docker-entrypoint.sh
# (not handled: *_FILE variables, POSTGRES_INITDB_ARGS/WALDIR, init scripts
# other than *.sh and *.sql).
set -Eeo pipefail

if [ "${1:0:1}" = '-' ]; then set -- postgres "$@"; fi
if [ "$1" != 'postgres' ]; then exec "$@"; fi

: "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}" "${POSTGRES_HOST_AUTH_METHOD:=}"
export POSTGRES_USER POSTGRES_DB

# docker_create_db_directories, then "restart script as postgres user" (gosu
# there; setpriv here).
if [ "$(id -u)" = '0' ]; then
	mkdir -p "$PGDATA" && chmod 00700 "$PGDATA"
	find "$PGDATA" /var/run/postgresql \! -user postgres -exec chown postgres '{}' +
	export HOME=/var/lib/postgresql
	exec setpriv --reuid=postgres --regid=postgres --init-groups "$BASH_SOURCE" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
	# docker_verify_minimum_env
	if [ -z "$POSTGRES_PASSWORD" ] && [ 'trust' != "$POSTGRES_HOST_AUTH_METHOD" ]; then
		echo >&2 'Error: Database is uninitialized and superuser password is not specified.'
		exit 1
	fi
	# docker_init_database_dir
	initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD")
	# pg_setup_hba_conf: every TCP client authenticates with password_encryption's
	# method (scram-sha-256 since PostgreSQL 14).
	: "${POSTGRES_HOST_AUTH_METHOD:=$(postgres -C password_encryption)}"
	printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >> "$PGDATA/pg_hba.conf"
	# docker_temp_server_start: "does not listen on external TCP/IP" while setting up.
	export PGPASSWORD="$POSTGRES_PASSWORD"
	PGUSER="$POSTGRES_USER" pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p ${PGPORT:-5432}" -w start
	psql=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
	# docker_setup_db
	if [ -z "$("${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" --tuples-only <<<"SELECT 1 FROM pg_database WHERE datname = :'db';")" ]; then
		"${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
	fi
	# docker_process_init_files
	for f in /docker-entrypoint-initdb.d/*; do
		case "$f" in
			*.sh) echo "$0: running $f"; . "$f" ;;
			*.sql) echo "$0: running $f"; "${psql[@]}" --dbname "$POSTGRES_DB" -f "$f" ;;
		esac
	done
	# docker_temp_server_stop
	PGUSER="$POSTGRES_USER" pg_ctl -D "$PGDATA" -m fast -w stop
	unset PGPASSWORD
	printf '\nPostgreSQL init process complete; ready for start up.\n\n'
else
	printf '\nPostgreSQL Database directory appears to contain a database; Skipping initialization\n\n'
fi

exec "$@"
