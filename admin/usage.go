package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/keygate/keygate/usage"
)

// The usage routes:
//
//	GET /api-keys/{id}/usage  one key's checks: ?from=&to=&step=minute|hour|day&by=route|model|outcome
//	GET /usage                an owner's checks: ?owner=&from=&to=&step=&by=route|model|outcome|key
//
// Times are RFC 3339; the default range is the last 24 hours, the default step an
// hour. An api-keys caller sees its own owner's keys only; an admin caller sees any, and
// without ?owner= every owner's checks, those of unknown keys included (key_id "").

// UsageReader answers usage queries; *usage.SQLStore is one.
type UsageReader interface {
	Query(ctx context.Context, q usage.Query) ([]usage.Point, error)
}

// UsageResponse is the body of both usage routes. Each point holds the start of its
// step, the value of the "by" dimension under the dimension's name (route, model,
// outcome or key_id; absent without by), and the count.
type UsageResponse struct {
	KeyID  string       `json:"key_id,omitempty"`
	Owner  string       `json:"owner,omitempty"`
	From   time.Time    `json:"from"`
	To     time.Time    `json:"to"`
	Step   usage.Step   `json:"step"`
	By     string       `json:"by,omitempty"`
	Total  int64        `json:"total"`
	Points []UsagePoint `json:"points"`
}

// UsagePoint is one point of a UsageResponse.
type UsagePoint struct {
	Time  time.Time
	By    string // the dimension's JSON name; "" for none
	Value string
	Count int64
}

// MarshalJSON writes {"time":…,"<by>":…,"count":…}.
func (p UsagePoint) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	t, _ := json.Marshal(p.Time)
	b.WriteString(`{"time":`)
	b.Write(t)
	if p.By != "" {
		k, _ := json.Marshal(p.By)
		v, _ := json.Marshal(p.Value)
		b.WriteString(",")
		b.Write(k)
		b.WriteString(":")
		b.Write(v)
	}
	fmt.Fprintf(&b, `,"count":%d}`, p.Count)
	return b.Bytes(), nil
}

// UnmarshalJSON reads what MarshalJSON writes.
func (p *UsagePoint) UnmarshalJSON(b []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	*p = UsagePoint{}
	for k, v := range m {
		var err error
		switch k {
		case "time":
			err = json.Unmarshal(v, &p.Time)
		case "count":
			err = json.Unmarshal(v, &p.Count)
		default:
			p.By = k
			err = json.Unmarshal(v, &p.Value)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (a *api) keyUsage(r *http.Request, c caller) reply {
	if a.UsageStats == nil {
		return usageOff()
	}
	rec, miss := a.find(r, c)
	if miss != nil {
		return *miss
	}
	q, out := a.usageQuery(r.URL.RawQuery, false)
	if out != nil {
		return *out
	}
	q.KeyID = rec.ID
	return a.answerUsage(r.Context(), q, UsageResponse{KeyID: rec.ID, Owner: rec.Owner})
}

func (a *api) ownerUsage(r *http.Request, c caller) reply {
	if a.UsageStats == nil {
		return usageOff()
	}
	q, out := a.usageQuery(r.URL.RawQuery, true)
	if out != nil {
		return *out
	}
	switch {
	case q.Owner == "" && c.admin:
		q.All = true
	case q.Owner == "":
		q.Owner = c.rec.Owner
	case q.Owner != c.rec.Owner && !c.admin:
		return fail(http.StatusForbidden, "FORBIDDEN", "an api-keys caller sees its own owner's usage only")
	}
	return a.answerUsage(r.Context(), q, UsageResponse{Owner: q.Owner})
}

func usageOff() reply {
	return fail(http.StatusNotImplemented, "USAGE_DISABLED", "usage analytics are off (set usage.store in the configuration)")
}

// usageQuery parses the query string: each parameter at most once, no others.
func (a *api) usageQuery(raw string, owner bool) (usage.Query, *reply) {
	bad := func(msg string) (usage.Query, *reply) {
		out := failBadRequest(msg)
		return usage.Query{}, &out
	}
	vals, err := url.ParseQuery(raw)
	if err != nil {
		return bad("the query string does not parse")
	}
	allowed := map[string]bool{"from": true, "to": true, "step": true, "by": true, "owner": owner}
	for k, v := range vals {
		if !allowed[k] {
			return bad(fmt.Sprintf("unknown parameter %q", k))
		}
		if len(v) > 1 {
			return bad(fmt.Sprintf("parameter %q is given more than once", k))
		}
	}
	q := usage.Query{Step: usage.StepHour, To: a.Now()}
	if s := vals.Get("to"); s != "" {
		if q.To, err = time.Parse(time.RFC3339, s); err != nil {
			return bad("to: want an RFC 3339 time such as 2026-11-24T10:00:00Z")
		}
	}
	q.From = q.To.Add(-24 * time.Hour)
	if s := vals.Get("from"); s != "" {
		if q.From, err = time.Parse(time.RFC3339, s); err != nil {
			return bad("from: want an RFC 3339 time such as 2026-11-23T10:00:00Z")
		}
	}
	if s := vals.Get("step"); s != "" {
		q.Step = usage.Step(s)
	}
	switch by := usage.Dimension(vals.Get("by")); by {
	case usage.DimNone, usage.DimRoute, usage.DimModel, usage.DimOutcome:
		q.By = by
	case usage.DimKey:
		if !owner {
			return bad("by: want route, model or outcome")
		}
		q.By = by
	default:
		return bad("by: want route, model, outcome (or key, per owner)")
	}
	q.Owner = vals.Get("owner")
	n, err := q.Normalize()
	if err != nil {
		return bad(err.Error())
	}
	return n, nil
}

func (a *api) answerUsage(ctx context.Context, q usage.Query, resp UsageResponse) reply {
	pts, err := a.UsageStats.Query(ctx, q)
	switch {
	case errors.Is(err, usage.ErrInvalidQuery), errors.Is(err, usage.ErrTooManyPoints):
		return failBadRequest(err.Error())
	case err != nil:
		return fail(http.StatusServiceUnavailable, "STORE_UNAVAILABLE", "the usage store is unavailable; retry")
	}
	resp.From, resp.To, resp.Step = q.From, q.To, q.Step
	by := string(q.By)
	if q.By == usage.DimKey {
		by = "key_id"
	}
	resp.By = by
	resp.Points = make([]UsagePoint, 0, len(pts))
	for _, p := range pts {
		resp.Total += p.Count
		resp.Points = append(resp.Points, UsagePoint{Time: p.Time, By: by, Value: p.Group, Count: p.Count})
	}
	return reply{http.StatusOK, resp}
}
