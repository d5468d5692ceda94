package main

import "net/http"

// adminHandler returns the routes that serve offers on the admin socket.
func (d *daemon) adminHandler() http.Handler {
	mux := http.NewServeMux()
	d.userRoutes(mux)
	d.statusRoutes(mux)
	return mux
}
