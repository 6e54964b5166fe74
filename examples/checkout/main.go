// Command checkout is the demo program `make demo` traces: a few
// "requests", each loading a cart, pricing its items on goroutines in
// parallel and writing an order. It has no tracing code at all.
package main

import (
	"flag"
	"fmt"
	"sync"
	"time"
)

type item struct {
	sku   string
	price int
}

//go:noinline
func loadCart(user int) []item {
	time.Sleep(2 * time.Millisecond) // a database read
	return []item{{"book", 0}, {"pen", 0}, {"lamp", 0}}
}

//go:noinline
func priceItem(it *item) {
	time.Sleep(time.Duration(len(it.sku)) * time.Millisecond) // a pricing RPC
	it.price = 100 * len(it.sku)
}

//go:noinline
func priceItems(items []item) {
	var wg sync.WaitGroup
	for i := range items {
		wg.Add(1)
		go func(it *item) {
			defer wg.Done()
			priceItem(it)
		}(&items[i])
	}
	wg.Wait()
}

//go:noinline
func computeTax(items []item) int {
	t := 0
	for _, it := range items {
		t += it.price / 5
	}
	return t
}

//go:noinline
func writeOrder(user, total int) {
	time.Sleep(time.Millisecond) // a database write
}

//go:noinline
func handleCheckout(user int) int {
	items := loadCart(user)
	priceItems(items)
	total := computeTax(items)
	for _, it := range items {
		total += it.price
	}
	writeOrder(user, total)
	return total
}

func main() {
	n := flag.Int("requests", 3, "checkouts to run")
	flag.Parse()
	for u := 1; u <= *n; u++ {
		fmt.Printf("user %d paid %d\n", u, handleCheckout(u))
	}
}
