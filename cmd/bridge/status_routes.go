package main

import "net/http"

// statusRoutes adds the status and check routes of the admin socket.
func (d *daemon) statusRoutes(mux *http.ServeMux) {}
