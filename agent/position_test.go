package agent

import "testing"

func TestPositionBefore(t *testing.T) {
	tests := []struct {
		name string
		p, q position
		want bool
	}{
		{"lower index", position{0, 5}, position{0, 9}, true},
		{"higher index", position{0, 9}, position{0, 5}, false},
		{"same", position{1, 7}, position{1, 7}, false},
		{"restored cluster with a lower index is newer", position{1, 3}, position{0, 900}, false},
		{"state from before a restore is older", position{0, 900}, position{1, 3}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.before(tt.q); got != tt.want {
				t.Errorf("%+v.before(%+v) = %v, want %v", tt.p, tt.q, got, tt.want)
			}
		})
	}
}
