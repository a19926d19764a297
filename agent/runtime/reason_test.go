package runtime

import (
	"errors"
	"testing"
)

func TestReason(t *testing.T) {
	tests := []struct {
		name, image, ref, err, want string
	}{
		{
			name:  "not found",
			image: "127.0.0.1:5000/web:nope",
			ref:   "127.0.0.1:5000/web:nope",
			err: `failed to resolve reference "127.0.0.1:5000/web:nope": ` +
				`127.0.0.1:5000/web:nope: not found`,
			want: "not found",
		},
		{
			name:  "normalized reference",
			image: "nginx:nope",
			ref:   "docker.io/library/nginx:nope",
			err: `failed to resolve reference "docker.io/library/nginx:nope": ` +
				`docker.io/library/nginx:nope: not found`,
			want: "not found",
		},
		{
			name:  "unreachable registry",
			image: "127.0.0.1:5000/web:v1",
			ref:   "127.0.0.1:5000/web:v1",
			err: `failed to resolve reference "127.0.0.1:5000/web:v1": ` +
				`failed to do request: dial tcp 127.0.0.1:5000: connect: connection refused`,
			want: "failed to do request: dial tcp 127.0.0.1:5000: connect: connection refused",
		},
		{
			name:  "image not named",
			image: "web:v1",
			ref:   "docker.io/library/web:v1",
			err:   "content digest sha256:abc: not found",
			want:  "content digest sha256:abc: not found",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := reason(errors.New(tt.err), tt.image, tt.ref)
			if got != tt.want {
				t.Errorf("reason = %q, want %q", got, tt.want)
			}
		})
	}
}
