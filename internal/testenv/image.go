package testenv

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// WebBinaryPath is where the web server sits inside the images that
// BuildWebImage makes; it is also their entrypoint.
const WebBinaryPath = "/web"

// ErrNoGo is returned when no go toolchain is found to build the server.
var ErrNoGo = errors.New("go toolchain not found")

// webBuild caches the compiled web server for the life of the process:
// every image differs only in its config.
var webBuild struct {
	sync.Mutex
	binary []byte
}

// BuildWebImage returns a single-layer linux image of the web server in
// ./webserver: the static binary at /web, entrypoint ["/web"], and env
// VERSION=<version> plus env (sorted by key). The binary is compiled
// once per process with CGO_ENABLED=0, using the go on PATH or
// /usr/local/go/bin/go; compiling needs this package's source tree.
func BuildWebImage(version string, env map[string]string) (v1.Image, error) {
	bin, err := webBinary()
	if err != nil {
		return nil, err
	}
	layer, err := fileLayer(WebBinaryPath, bin)
	if err != nil {
		return nil, fmt.Errorf("web image layer: %w", err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, fmt.Errorf("web image: %w", err)
	}

	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("web image config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = runtime.GOARCH
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cf.Config.Entrypoint = []string{WebBinaryPath}
	cf.Config.Env = imageEnv(version, env)
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("web image config: %w", err)
	}
	return img, nil
}

func imageEnv(version string, env map[string]string) []string {
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := []string{"VERSION=" + version}
	for _, k := range keys {
		out = append(out, k+"="+env[k])
	}
	return out
}

// fileLayer is a layer holding one executable file at path.
func fileLayer(path string, content []byte) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdr := &tar.Header{
		Name:     path[1:],
		Mode:     0o755,
		Size:     int64(len(content)),
		Typeflag: tar.TypeReg,
		ModTime:  time.Unix(0, 0),
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, err
	}
	if _, err := tw.Write(content); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	})
}

// webBinary compiles the web server, once per process.
func webBinary() ([]byte, error) {
	webBuild.Lock()
	defer webBuild.Unlock()
	if webBuild.binary != nil {
		return webBuild.binary, nil
	}

	goBin, err := goTool()
	if err != nil {
		return nil, err
	}
	src, err := webSourceDir()
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "hm-web")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)

	out := filepath.Join(tmp, "web")
	cmd := exec.Command(goBin, "build", "-buildvcs=false", "-trimpath",
		"-o", out, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(),
		"CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build web server: %w: %s", err, msg)
	}
	bin, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	webBuild.binary = bin
	return bin, nil
}

// goTool finds the go command: on PATH, else the usual install place.
func goTool() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	for _, p := range []string{
		filepath.Join(runtime.GOROOT(), "bin", "go"),
		"/usr/local/go/bin/go",
	} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", ErrNoGo
}

// webSourceDir is ./webserver next to this file. It relies on the source
// tree being present, which holds for tests and for `go run` of the demo.
// TODO: embed a prebuilt binary for a demo shipped without its source.
func webSourceDir() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("web server source: caller unknown")
	}
	dir := filepath.Join(filepath.Dir(file), "webserver")
	if _, err := os.Stat(filepath.Join(dir, "main.go")); err != nil {
		return "", fmt.Errorf("web server source: %w", err)
	}
	return dir, nil
}
