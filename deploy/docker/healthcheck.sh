#!/usr/bin/env bash
# Container health check for rhythm's processes: healthy when PORT on localhost answers
# GET /metrics with rhythm's series. Uses bash's /dev/tcp, so the runtime image needs no curl.
# Usage: rhythm-healthcheck PORT   (the learner's 9464, an actor's 9465 under compose)
set -euo pipefail
port=${1:?usage: rhythm-healthcheck PORT}
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
timeout 5 grep -q '^rhythm_' <&3
