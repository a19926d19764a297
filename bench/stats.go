package main

import (
	"fmt"
	"math"
	"sort"
	"time"
)

// summary is the median, min and max of a sample.
type summary struct {
	n                int
	median, min, max float64
}

// summarize sums up xs; the median of an even count is the mean of the
// middle two. An empty sample gives n 0.
func summarize(xs []float64) summary {
	if len(xs) == 0 {
		return summary{}
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return summary{n: len(s), median: med, min: s[0], max: s[len(s)-1]}
}

// percentile is the nearest-rank p-th percentile (0 < p <= 100) of a
// sorted sample; 0 for an empty one.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// seconds renders a duration in seconds with millisecond precision.
func seconds(x float64) string {
	return fmt.Sprintf("%.3f s", x)
}

func secs(d time.Duration) float64 { return d.Seconds() }
