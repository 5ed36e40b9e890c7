package ledger

import (
	"context"
	"encoding/json"
	"maps"
	"time"

	"go.uber.org/zap"
)

// sweepIndex is the sweep's record, in storage (Keys.SweepIndex), of the
// certificate records it found stored and not expired, with their
// not_after. A stored record changes no more until it expires or goes
// (its key is never reused), so the next sweep does not read it again: a
// Caddy restarted on the storage of a thousand certificates reads one
// index, not a thousand records. An index that is missing, unreadable,
// stale or written meanwhile by another Caddy only costs the reads.
type sweepIndex struct {
	Stored map[string]int64 `json:"stored"` // record key: not_after, Unix seconds
	next   map[string]int64 // the index to write: entries found again, records read stored
}

func (l *Ledger) loadSweepIndex(ctx context.Context) *sweepIndex {
	idx := &sweepIndex{next: make(map[string]int64)}
	if data, err := l.Storage().Load(ctx, l.Keys.SweepIndex()); err == nil {
		_ = json.Unmarshal(data, idx) // a damaged index is none
	}
	return idx
}

// valid says whether the record at key is known stored and not expired at
// now, and keeps it in the next index if so.
func (idx *sweepIndex) valid(key string, now time.Time) bool {
	notAfter, ok := idx.Stored[key]
	if !ok || !now.Before(time.Unix(notAfter, 0)) {
		return false
	}
	idx.next[key] = notAfter
	return true
}

// add puts a record read stored and valid in the next index.
func (idx *sweepIndex) add(r CertRecord) { idx.next[r.Key] = r.NotAfter.Unix() }

// saveSweepIndex writes the next index if it differs from the one read.
func (l *Ledger) saveSweepIndex(ctx context.Context, idx *sweepIndex) {
	if maps.Equal(idx.next, idx.Stored) {
		return
	}
	if err := l.Put(ctx, l.Keys.SweepIndex(), sweepIndex{Stored: idx.next}); err != nil {
		l.Logger.Warn("saving the sweep's index of stored records; the next sweep reads them all", zap.Error(err))
	}
}
