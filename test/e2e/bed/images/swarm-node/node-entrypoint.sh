#!/bin/sh
# dockerd of one Swarm node. NODE_NAME names its cgroup parent (two nodes must not share one, nor
# the host's "docker"). DOCKER_SERVICE_PREFER_OFFLINE_IMAGE: the fixture loads every image the
# test runs into each node, and the bed's registry (127.0.0.1 on the host) is out of a node's
# reach, so a task uses the loaded image instead of first trying a pull that cannot succeed.
set -eu
# A node killed (docker kill: a droplet losing power) leaves dockerd's and containerd's run state
# in the container's /run, and the next start would wait for a containerd that is not there.
rm -rf /var/run/docker /var/run/docker.pid /var/run/docker.sock /run/containerd
mkdir -p /run/ttg-node
rm -f /run/ttg-node/docker.sock
export DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1
exec dockerd --cgroup-parent="/dind-${NODE_NAME:?}" \
  -H unix:///var/run/docker.sock -H unix:///run/ttg-node/docker.sock "$@"
