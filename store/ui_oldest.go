package store

import "time"

// Oldest returns the earliest span start of the traces held, and false
// when the store is empty: the web UI says a window reaching further back
// sees only what the store kept. It reads the traces' summaries, decoding
// none.
func (s *Store) Oldest() (time.Time, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var oldest int64
	found := false
	for _, ref := range s.order[s.head:] {
		e := &s.entries[ref.slot]
		if e.gen != ref.gen {
			continue
		}
		if !found || e.sum.firstStart < oldest {
			oldest, found = e.sum.firstStart, true
		}
	}
	if !found {
		return time.Time{}, false
	}
	return time.Unix(0, oldest), true
}
