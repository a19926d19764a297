package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// requestTimeout bounds an API call; a snapshot download has none.
const requestTimeout = 30 * time.Second

// ErrAPI is wrapped by every error a manager answered with; the message
// is the manager's own.
var ErrAPI = errors.New("api error")

// APIError is an error answer of the HTTP API: the gateway's JSON
// {code, message}, code being a gRPC code.
type APIError struct {
	Status  int    // HTTP status
	Code    int    // gRPC code, 0 if the body had none
	Message string // the manager's message
}

// Error returns the manager's message, on one line.
func (e *APIError) Error() string {
	return strings.Join(strings.Fields(e.Message), " ")
}

// Unwrap returns ErrAPI.
func (e *APIError) Unwrap() error { return ErrAPI }

// client calls a manager's HTTP API.
type client struct {
	base *url.URL
	http *http.Client
}

// newClient parses addr, "http://ip:port" or "ip:port".
func newClient(addr string) (*client, error) {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("manager address %q: want http://ip:port", addr)
	}
	return &client{base: u, http: &http.Client{}}, nil
}

// call sends in (nil: no body) and decodes the answer into out (nil:
// ignore it).
func (c *client) call(ctx context.Context, method, path string, in, out proto.Message) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()

	var body io.Reader
	if in != nil {
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	resp, err := c.do(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()

	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if out == nil {
		return nil
	}
	opts := protojson.UnmarshalOptions{DiscardUnknown: true}
	if err := opts.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// download streams the answer of a GET into w.
func (c *client) download(ctx context.Context, path string, w io.Writer) (int64, error) {
	resp, err := c.do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()

	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("GET %s: %w", path, err)
	}
	return n, nil
}

// upload POSTs size bytes of r as a SQLite file and decodes the JSON
// answer into out. It is bounded by restoreTimeout, not requestTimeout:
// a large snapshot takes a while to send and to install.
func (c *client) upload(ctx context.Context, path string, r io.Reader, size int64, out any) error {
	ctx, cancel := context.WithTimeout(ctx, restoreTimeout)
	defer cancel()
	u := *c.base
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), r)
	if err != nil {
		return fmt.Errorf("POST %s: %w", path, err)
	}
	req.ContentLength = size
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Content-Type", "application/vnd.sqlite3")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("manager at %s: %w", c.base.Host, unwrapURL(err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return fmt.Errorf("POST %s: read answer: %w", path, err)
	}
	if resp.StatusCode/100 != 2 {
		return apiError(resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("POST %s: decode answer: %w", path, err)
	}
	return nil
}

// do sends a request and returns a 2xx response; any other answer
// becomes an *APIError.
// path is escaped already (pathEscape): it goes out as it is.
func (c *client) do(ctx context.Context, method, path string, body io.Reader) (*http.Response, error) {
	ref, err := url.Parse(path)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	u := *c.base
	u.Path = strings.TrimSuffix(u.Path, "/") + ref.Path
	u.RawPath = strings.TrimSuffix(c.base.EscapedPath(), "/") + ref.EscapedPath()
	u.RawQuery = ref.RawQuery
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("manager at %s: %w", c.base.Host, unwrapURL(err))
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return nil, apiError(resp.StatusCode, b)
}

// apiError reads the gateway's {code, message}, or failing that the
// first line of a plain-text body.
func apiError(status int, body []byte) *APIError {
	e := &APIError{Status: status}
	var s struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &s) == nil && s.Message != "" {
		e.Code, e.Message = s.Code, s.Message
		return e
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n")
	if line == "" {
		line = strings.ToLower(http.StatusText(status))
	}
	e.Message = fmt.Sprintf("%s (http %d)", line, status)
	return e
}

// unwrapURL drops the *url.Error wrapper, whose text repeats the method
// and the whole URL.
func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// pathEscape escapes one path segment, such as an app name.
func pathEscape(s string) string { return url.PathEscape(s) }
