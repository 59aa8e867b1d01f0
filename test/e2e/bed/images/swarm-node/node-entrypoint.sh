#!/bin/sh
# dockerd of one Swarm node. NODE_NAME names its cgroup parent (two nodes must not share one, nor
# the host's "docker"). DOCKER_SERVICE_PREFER_OFFLINE_IMAGE: the fixture loads every image the
# test runs into each node, and the bed's registry (127.0.0.1 on the host) is out of a node's
# reach, so a task uses the loaded image instead of first trying a pull that cannot succeed.
set -eu
mkdir -p /run/ttg-node
rm -f /run/ttg-node/docker.sock /var/run/docker.pid
export DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1
exec dockerd --cgroup-parent="/dind-${NODE_NAME:?}" \
  -H unix:///var/run/docker.sock -H unix:///run/ttg-node/docker.sock "$@"
