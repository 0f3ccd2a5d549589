#!/usr/bin/env bash
# The official entrypoint, with setpriv for su-exec:
# https://github.com/docker-library/rabbitmq/blob/9193c1de6d32/4.2/alpine/docker-entrypoint.sh
# RABBITMQ_DEFAULT_USER/_PASS/_VHOST need nothing here: RabbitMQ (3.9+) reads
# them itself (rabbitmq/rabbitmq-server#3299), the user tagged administrator
# (default_user_tags).
set -euo pipefail

# allow the container to be started with `--user`
if [[ "$1" == rabbitmq* ]] && [ "$(id -u)" = '0' ]; then
	if [ "$1" = 'rabbitmq-server' ]; then
		find /var/lib/rabbitmq \! -user rabbitmq -exec chown rabbitmq '{}' +
	fi
	exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups "$BASH_SOURCE" "$@"
fi

# if long and short hostnames are not the same, use long hostnames
if [ -z "${RABBITMQ_USE_LONGNAME:-}" ] && [ "$(hostname)" != "$(hostname -s)" ]; then
	: "${RABBITMQ_USE_LONGNAME:=true}"
fi

exec "$@"
