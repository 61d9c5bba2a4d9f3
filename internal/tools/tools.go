//go:build tools

// Package tools pins the module versions the project builds against, so that
// go.mod names them before every package imports them.
package tools

import (
	_ "github.com/haproxytech/client-native/v5/models"
	_ "github.com/jackc/pgx/v5"
	_ "github.com/jmespath/go-jmespath"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "go.etcd.io/etcd/client/v3"
	_ "go.etcd.io/etcd/client/v3/concurrency"
	_ "go.etcd.io/etcd/server/v3/embed"
	_ "go.uber.org/goleak"
	_ "go.uber.org/zap"
	_ "gopkg.in/yaml.v3"
)
