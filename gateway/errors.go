package gateway

import (
	"encoding/json"
	"net/http"
)

// apiError is the body of every error answer (DESIGN §6).
type apiError struct {
	Error struct {
		Code    string
		Message string
	}
	RequestId  string
	Invocation any `json:",omitempty"`
}

func writeError(w http.ResponseWriter, status int, code, msg, requestID string) {
	writeErrorWith(w, status, code, msg, requestID, nil)
}

func writeErrorWith(w http.ResponseWriter, status int, code, msg, requestID string, inv any) {
	var e apiError
	e.Error.Code, e.Error.Message, e.RequestId, e.Invocation = code, msg, requestID, inv
	writeJSON(w, status, e)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
