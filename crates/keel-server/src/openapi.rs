//! `GET /openapi.json`: a hand-written OpenAPI 3.1 document of every route (a test checks that
//! each listed route answers and that the list matches the router).

use serde_json::{Map, Value, json};

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn ok_json(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn body(schema: Value) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": schema}}})
}

/// The responses every JSON POST route can give besides its own.
fn common_errors() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("400".into(), error_response("Malformed JSON"));
    m.insert("413".into(), error_response("Body or input count over the limit"));
    m.insert("422".into(), error_response("Well-formed JSON that is not a valid request"));
    m.insert("503".into(), error_response("Not ready, a dependency is failing, or the deadline passed"));
    m
}

fn post_op(summary: &str, request: Value, ok: Value, extra: &[(&str, &str)]) -> Value {
    let mut responses = common_errors();
    responses.insert("200".into(), ok);
    for (code, what) in extra {
        responses.insert((*code).into(), error_response(what));
    }
    json!({"post": {"summary": summary, "requestBody": body(request), "responses": responses}})
}

fn admin_op(summary: &str, request: Option<Value>) -> Value {
    let mut responses = common_errors();
    responses.insert("200".into(), ok_json("What the server serves now", json!({"type": "object"})));
    responses.insert("401".into(), error_response("Missing or wrong bearer token"));
    responses.insert("404".into(), error_response("Admin routes disabled (no token configured) or no such model"));
    responses.insert("409".into(), error_response("The version was trained on another encoder"));
    let mut op = json!({"summary": summary, "security": [{"bearer": []}], "responses": responses});
    if let Some(r) = request {
        op["requestBody"] = body(r);
    }
    json!({"post": op})
}

fn get_op(summary: &str, content_type: &str, extra: &[(&str, &str)]) -> Value {
    let mut responses = Map::new();
    responses.insert("200".into(), json!({"description": summary, "content": {content_type: {}}}));
    for (code, what) in extra {
        responses.insert((*code).into(), error_response(what));
    }
    json!({"get": {"summary": summary, "responses": responses}})
}

/// The document, with `extra` path items (routes other features merge in).
pub(crate) fn document(extra: &Map<String, Value>) -> Value {
    let strings = json!({"type": "array", "items": {"type": "string"}, "minItems": 1});
    let mut paths = Map::new();
    paths.insert(
        "/v1/classify".into(),
        post_op(
            "Classify texts with the served model version (a model that reads text never calls the encoder)",
            json!({"type": "object", "required": ["inputs"], "additionalProperties": false,
                   "properties": {"inputs": strings}}),
            ok_json(
                "Predictions; `model` names the version that answered, `degraded` is true when the fallback head answered",
                json!({"$ref": "#/components/schemas/Classification"}),
            ),
            &[("429", "The encoder queue is full; see Retry-After")],
        ),
    );
    paths.insert(
        "/v1/embeddings".into(),
        post_op(
            "OpenAI-compatible embeddings",
            json!({"type": "object", "required": ["input"], "properties": {
                "input": {"oneOf": [{"type": "string"}, strings]},
                "model": {"type": "string"},
                "encoding_format": {"enum": ["float", "base64"]},
                "dimensions": {"type": "integer"},
                "version": {"type": "string", "description": "A served version (NAME@N or NAME@ALIAS): its own encoder, fine-tuned or not, instead of the configured base encoder"}}}),
            ok_json("OpenAI's embedding list", json!({"type": "object"})),
            &[
                ("404", "`version` names no version this server has loaded"),
                ("429", "The encoder queue is full; see Retry-After"),
                ("503", "No encoder (none configured, or it cannot load), or the encoder is failing"),
            ],
        ),
    );
    paths.insert(
        "/v1/feedback".into(),
        post_op(
            "Attach a true label to a prediction id",
            json!({"type": "object", "required": ["prediction_id", "label"], "properties": {
                "prediction_id": {"type": "string"}, "label": {"type": "string"}}}),
            ok_json("Recorded", json!({"type": "object"})),
            &[("404", "No logged prediction with that id")],
        ),
    );
    paths.insert(
        "/v1/models".into(),
        get_op(
            "The encoder (once loaded) and the model versions served; each version's `reads` is `text` or `embeddings`",
            "application/json",
            &[],
        ),
    );
    paths.insert("/healthz".into(), get_op("The process is up", "application/json", &[]));
    paths.insert(
        "/readyz".into(),
        get_op("Ready to classify (or degraded with a fallback)", "application/json", &[("503", "Not ready")]),
    );
    paths.insert(
        "/metrics".into(),
        get_op("Prometheus text format 0.0.4 (OpenMetrics on Accept: application/openmetrics-text)", "text/plain", &[]),
    );
    paths.insert("/openapi.json".into(), get_op("This document", "application/json", &[]));
    let version_ref = json!({"type": "object", "required": ["model", "version"], "properties": {
        "model": {"type": "string"}, "version": {"type": "integer"},
        "alias": {"type": "string", "default": "production"}, "reason": {"type": "string"}}});
    paths.insert("/v1/admin/promote".into(), admin_op("Point an alias at a version and serve it", Some(version_ref)));
    paths.insert(
        "/v1/admin/rollback".into(),
        admin_op(
            "Move an alias back to its previous version",
            Some(json!({"type": "object", "required": ["model"], "properties": {
                "model": {"type": "string"}, "alias": {"type": "string", "default": "production"}}})),
        ),
    );
    paths.insert("/v1/admin/reload".into(), admin_op("Follow the registry now", None));
    for (path, item) in extra {
        paths.insert(path.clone(), item.clone());
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Keel", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Classification, embeddings and feedback for Keel's served models."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["type", "message"],
                    "properties": {"type": {"type": "string"}, "message": {"type": "string"}}}}},
                "Classification": {"type": "object", "required": ["model", "degraded", "predictions"], "properties": {
                    "model": {"type": "string", "description": "NAME@VERSION"},
                    "degraded": {"type": "boolean"},
                    "predictions": {"type": "array", "items": {"type": "object", "properties": {
                        "id": {"type": "string"}, "label": {"type": "string"},
                        "scores": {"type": "object", "additionalProperties": {"type": "number"}}}}}}}
            }
        }
    })
}
