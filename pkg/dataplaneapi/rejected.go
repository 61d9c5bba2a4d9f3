package dataplaneapi

import "net/http"

// Rejected reports whether the API refused the content of a change (400,
// 422: e.g. the configuration HAProxy's check rejects at commit) rather
// than failing to process it: the controller then holds back only the
// clusters whose services cause it (target.IsRejected).
func (e *APIError) Rejected() bool {
	return e.Status == http.StatusBadRequest || e.Status == http.StatusUnprocessableEntity
}
