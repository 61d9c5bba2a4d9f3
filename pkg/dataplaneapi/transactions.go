package dataplaneapi

import (
	"context"
	"net/http"

	"github.com/haproxytech/client-native/v5/models"
)

// ListTransactions lists the API's transactions (every status).
func (c *Client) ListTransactions(ctx context.Context) (models.Transactions, error) {
	var out models.Transactions
	if _, err := c.do(ctx, http.MethodGet, "/transactions", nil, nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}
