package main

import "net/http"

// userRoutes adds the user management routes of the admin socket.
func (d *daemon) userRoutes(mux *http.ServeMux) {}
