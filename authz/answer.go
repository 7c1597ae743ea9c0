package authz

import (
	"fmt"
	"net/http"
)

// Answer is a refusal the mTLS terminator writes itself, outside a check: a request it
// will not forward, a body that did not arrive, a check or an upstream that failed.
// Profile.Answer renders it in the deny profile's envelope, so a client sees one shape
// of error whoever refused it.
type Answer uint8

// Answers the terminator writes.
const (
	AnswerUpgradeRefused Answer = iota // 400: a request to switch to h2c
	AnswerUnreadableBody               // 400: the body the check needs could not be read
	AnswerBodyTimeout                  // 408: the body the check needs was not sent in time
	AnswerUnavailable                  // 503: the check failed (the profile's store_unavailable body)
	AnswerForbidden                    // 403: the check gave no explicit allow
	AnswerBadGateway                   // 502: the upstream could not be reached
	numAnswers
)

var answerCodes = [numAnswers]string{
	AnswerUpgradeRefused: "upgrade_refused",
	AnswerUnreadableBody: "unreadable_body",
	AnswerBodyTimeout:    "body_timeout",
	AnswerUnavailable:    "unavailable",
	AnswerForbidden:      "forbidden",
	AnswerBadGateway:     "bad_gateway",
}

// Answers returns every answer, in order.
func Answers() []Answer {
	out := make([]Answer, numAnswers)
	for i := range out {
		out[i] = Answer(i)
	}
	return out
}

func (a Answer) String() string {
	if a < numAnswers {
		return answerCodes[a]
	}
	return fmt.Sprintf("answer(%d)", uint8(a))
}

// Status is the answer's HTTP status.
func (a Answer) Status() int {
	switch a {
	case AnswerBodyTimeout:
		return http.StatusRequestTimeout
	case AnswerUnavailable:
		return http.StatusServiceUnavailable
	case AnswerForbidden:
		return http.StatusForbidden
	case AnswerBadGateway:
		return http.StatusBadGateway
	}
	return http.StatusBadRequest
}

// Messages of the terminator's answers.
const (
	upgradeRefusedMessage = "Upgrading to h2c is not supported."
	unreadableBodyMessage = "The request body could not be read."
	bodyTimeoutMessage    = "The request body was not sent in time."
	forbiddenMessage      = "The request was not authorized."
	badGatewayMessage     = "The upstream service could not be reached."
)

// Answer renders answer a in profile p: its status, body and, for a 503, Retry-After.
func (p Profile) Answer(a Answer) Denial {
	if p >= numProfiles || a >= numAnswers {
		panic(fmt.Sprintf("authz: answer %v in profile %v", a, p))
	}
	status := a.Status()
	if a == AnswerUnavailable {
		d := &denier{profile: p}
		return Denial{Status: status, Body: d.body(ReasonUnavailable, bodyArgs{}), RetryAfter: retryAfterSeconds}
	}
	// Codes per profile: upper snake case (magicx, apikey), an error class (mythiq),
	// an OpenAI type and code (openai).
	var msg, upper, class, oaType, oaCode string
	switch a {
	case AnswerUpgradeRefused:
		msg, upper, class, oaType, oaCode = upgradeRefusedMessage, "UPGRADE_NOT_SUPPORTED", "invalid_request_error", "invalid_request_error", "upgrade_not_supported"
	case AnswerUnreadableBody:
		msg, upper, class, oaType, oaCode = unreadableBodyMessage, "INVALID_REQUEST_BODY", "invalid_request_error", "invalid_request_error", "invalid_body"
	case AnswerBodyTimeout:
		msg, upper, class, oaType, oaCode = bodyTimeoutMessage, "REQUEST_TIMEOUT", "timeout_error", "invalid_request_error", "request_timeout"
	case AnswerForbidden:
		msg, upper, class, oaType, oaCode = forbiddenMessage, "ACCESS_DENIED", "permission_error", "invalid_request_error", "access_denied"
	case AnswerBadGateway:
		msg, upper, class, oaType, oaCode = badGatewayMessage, "UPSTREAM_UNAVAILABLE", "service_unavailable", "server_error", "upstream_unavailable"
	}
	var v any
	switch p {
	case ProfileMagicx:
		v = magicxBody{Error: magicxError{Code: upper, Message: msg, Status: status}}
	case ProfileAPIKey:
		v = apikeyBody{Error: apikeyError{Code: upper, Message: msg}}
	case ProfileMythIQ:
		v = mythiqBody{Message: msg, Code: class}
	case ProfileOpenAI:
		v = openaiBody{Error: openaiError{Message: msg, Type: oaType, Code: oaCode}}
	}
	return Denial{Status: status, Body: encodeBody(v)}
}
