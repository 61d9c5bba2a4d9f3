// Package docker holds the files of the docker compose demo stack
// (docker-compose.yml at the repository root, the images' Dockerfiles and the
// configs they ship). It has no code of its own: its tests check the stack
// statically, since no Docker engine runs where the tests do.
package docker
