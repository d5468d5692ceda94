package proxy

import (
	"context"
	"log/slog"
)

type loggerKey struct{}

// withLogger returns ctx carrying log, so that what a session calls logs
// with the session's id, user and account.
func withLogger(ctx context.Context, log *slog.Logger) context.Context {
	return context.WithValue(ctx, loggerKey{}, log)
}

// loggerFrom returns the logger that ctx carries, or fallback.
func loggerFrom(ctx context.Context, fallback *slog.Logger) *slog.Logger {
	if log, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok {
		return log
	}
	return fallback
}
