package dpapitest

import "net"

// WithListener serves the double on l (e.g. a chosen loopback address and
// port, so that several doubles answer one URL template) instead of a fresh
// 127.0.0.1 port. The double closes it with the test.
func WithListener(l net.Listener) Option { return func(s *Server) { s.listener = l } }
