package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/latscope/latscope/examples/demo/internal/pricingpb"
	"github.com/latscope/latscope/examples/demo/internal/service"
)

// Product is the JSON body of GET /product/{id}.
type Product struct {
	ID          int64    `json:"id"`
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Price       int64    `json:"price"` // cents
	Reviews     []Review `json:"reviews"`
}

// Review is one review, as the reviews service returns it.
type Review struct {
	Author string `json:"author"`
	Rating int    `json:"rating"`
	Text   string `json:"text"`
}

type handler struct {
	store      *store
	pricing    *pricingpb.Client
	reviewsURL string
	http       *http.Client
	timeout    time.Duration
	log        *slog.Logger
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		service.WriteError(w, http.StatusMethodNotAllowed, "use GET")
		return
	}
	id, ok := service.PathID(r.URL.Path, "/product/")
	if !ok {
		service.WriteError(w, http.StatusNotFound, "want /product/{id} with a positive integer id")
		return
	}
	p, err := h.product(r.Context(), id)
	switch {
	case errors.Is(err, errNoProduct):
		service.WriteError(w, http.StatusNotFound, fmt.Sprintf("no product %d", id))
	case err != nil:
		if r.Context().Err() == nil { // else the caller gave up: not our failure
			h.log.Warn("get product", "id", id, "err", err)
		}
		service.WriteError(w, http.StatusBadGateway, err.Error())
	default:
		service.WriteJSON(w, http.StatusOK, p)
	}
}

// product reads the row from SQLite, then fetches the price and the
// reviews on two goroutines at once.
func (h *handler) product(ctx context.Context, id int64) (*Product, error) {
	name, desc, err := h.store.product(ctx, id)
	if err != nil {
		return nil, err
	}
	p := &Product{ID: id, Name: name, Description: desc}

	var wg sync.WaitGroup
	var priceErr, reviewsErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		p.Price, priceErr = h.price(ctx, id)
	}()
	go func() {
		defer wg.Done()
		p.Reviews, reviewsErr = h.reviews(ctx, id)
	}()
	wg.Wait()
	if err := errors.Join(priceErr, reviewsErr); err != nil {
		return nil, err
	}
	return p, nil
}

func (h *handler) price(ctx context.Context, id int64) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	return h.pricing.GetPrice(ctx, strconv.FormatInt(id, 10))
}

func (h *handler) reviews(ctx context.Context, id int64) ([]Review, error) {
	url := fmt.Sprintf("%s/reviews/%d", h.reviewsURL, id)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("build reviews request: %w", err)
	}
	resp, err := h.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", url, err)
	}
	defer func() {
		// Read to EOF so the connection goes back to the pool: a body
		// closed unread closes its connection.
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("get %s: status %s", url, resp.Status)
	}
	var reviews []Review
	if err := json.NewDecoder(resp.Body).Decode(&reviews); err != nil {
		return nil, fmt.Errorf("decode reviews from %s: %w", url, err)
	}
	if reviews == nil {
		reviews = []Review{}
	}
	return reviews, nil
}
