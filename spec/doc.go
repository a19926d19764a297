// Package spec reads the app spec that users deploy: strict YAML in, a
// *pb.AppSpec out, with defaults filled in and every rule checked.
//
// Parse decodes a file and reports unknown fields and bad values with their
// line; ApplyDefaults fills what a spec may leave out; Validate checks a
// spec from any source (a file, or JSON posted to the API) and names the
// offending field. Load does all three for a file and puts line numbers on
// validation errors as well.
//
// The package owns the spec format and its rules. It never talks to a
// cluster, never reads the clock and never touches the file system.
package spec
