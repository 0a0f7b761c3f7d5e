// Package docs holds the documents the server serves itself: the OpenAPI
// description of its API (GET /openapi.json). The rest of this directory
// is for people.
package docs

import _ "embed"

// OpenAPI is docs/openapi.json.
//
//go:embed openapi.json
var OpenAPI []byte
