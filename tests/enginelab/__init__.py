"""A real Docker Engine for the template's tests.

- `engine`: the daemon (reachable or not; skip locally, fail in CI) and a thin
  `docker` runner.
- `images`: a Debian base image made with debootstrap, and local stand-ins for
  every image reference a rendered project names (there is no registry here).
- `compose`: one rendered project under `docker compose`, torn down afterwards.

`.ci/engine-up` installs the engine, Compose v2 and buildx, and starts dockerd.
"""
