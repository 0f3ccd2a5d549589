#!/bin/sh
# The official entrypoint, with setpriv for gosu:
# https://github.com/docker-library/redis/blob/e92049967d6b/7.4-rc/alpine/docker-entrypoint.sh
set -e

# first arg is `-f` or `--some-option`, or `something.conf`
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
	set -- redis-server "$@"
fi

# allow the container to be started with `--user`
if [ "$1" = 'redis-server' ] && [ "$(id -u)" = '0' ]; then
	find . \! -user redis -exec chown redis '{}' +
	exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi

# The official image builds redis with protected-mode off by default ("it is
# unnecessary in context of Docker", see its Dockerfile); Debian's build has it
# on. Restore that default unless a config file (or stdin, or a one-shot
# option) comes first; the user's later arguments still override it.
if [ "$1" = 'redis-server' ]; then
	case "${2:-}" in
		*.conf | - | -v | --version | -h | --help | --test-memory | --check-system) ;;
		*) shift; set -- redis-server --protected-mode no "$@" ;;
	esac
fi

# set an appropriate umask (if one isn't set already)
um="$(umask)"
if [ "$um" = '0022' ]; then
	umask 0077
fi

exec "$@"
