package spec

import (
	"errors"
	"fmt"
)

// ErrInvalid is wrapped by every error of Parse, Load and Validate, so a
// server can answer "invalid argument" with errors.Is.
var ErrInvalid = errors.New("invalid app spec")

// FieldError is a problem with one field of a spec.
type FieldError struct {
	// Field is the path of the field, e.g. "update.batch_size" or
	// "ports[1].name"; empty for the document as a whole.
	Field string

	// Line is the 1-based line of the field in the YAML, 0 when unknown
	// (a spec that did not come from a file).
	Line int

	// Msg says what is wrong, in lower case.
	Msg string
}

// Error formats the problem as "line 7: update.batch_size: msg", leaving
// out the line when it is unknown and the field when it is empty.
func (e *FieldError) Error() string {
	msg := e.Msg
	if e.Field != "" {
		msg = e.Field + ": " + msg
	}
	if e.Line > 0 {
		msg = fmt.Sprintf("line %d: %s", e.Line, msg)
	}
	return msg
}

// Unwrap returns ErrInvalid.
func (e *FieldError) Unwrap() error { return ErrInvalid }

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}
