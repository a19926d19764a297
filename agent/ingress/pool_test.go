package ingress

import "testing"

func TestPoolPick(t *testing.T) {
	a := Backend{TaskID: "a", Addr: "127.0.0.1:1"}
	b := Backend{TaskID: "b", Addr: "127.0.0.1:2"}
	c := Backend{TaskID: "c", Addr: "127.0.0.1:3"}
	entries := func(bs ...Backend) []*backend {
		var out []*backend
		for _, x := range bs {
			out = append(out, &backend{Backend: x})
		}
		return out
	}

	tests := []struct {
		name  string
		first []Backend // the set of the first pick
		then  []Backend // the set after an Update, for the second pick
		want  []string  // task of each pick until the pool is exhausted
	}{
		{name: "round robin", first: []Backend{a, b, c}, then: []Backend{a, b, c},
			want: []string{"a", "b", "c"}},
		{name: "tried task skipped after swap", first: []Backend{a, b},
			then: []Backend{a, c}, want: []string{"a", "c"}},
		{name: "empty after swap", first: []Backend{a}, then: nil,
			want: []string{"a"}},
		{name: "empty", want: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			counts := newActiveCounts()
			p := newPool(counts)
			p.set(entries(tc.first...))

			var tried []*backend
			var got []string
			for i := 0; ; i++ {
				if i == 1 {
					p.set(entries(tc.then...))
				}
				x, err := p.pick(tried)
				if err != nil {
					break
				}
				tried = append(tried, x)
				got = append(got, x.TaskID)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("picks = %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("picks = %v, want %v", got, tc.want)
				}
				if n := counts.get(got[i]); n != 1 {
					t.Errorf("count of %s = %d after its pick, want 1", got[i], n)
				}
				counts.release(got[i])
			}
			for _, id := range got {
				if n := counts.get(id); n != 0 {
					t.Errorf("count of %s = %d after release, want 0", id, n)
				}
			}
		})
	}
}
