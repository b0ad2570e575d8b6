//! What the xmpp platform declares: its verbs and the JSON schemas of its messages and
//! credentials, shaped like Sockethub's so the same clients validate the same way.

use serde_json::json;
use switchboard_protocol::Manifest;

pub const VERBS: [&str; 10] = [
    "connect",
    "join",
    "leave",
    "send",
    "update",
    "request-friend",
    "remove-friend",
    "make-friend",
    "query",
    "disconnect",
];

pub fn manifest() -> Manifest {
    Manifest {
        name: "xmpp",
        version: env!("CARGO_PKG_VERSION"),
        verbs: VERBS.to_vec(),
        messages: json!({
            "required": ["type", "actor"],
            "properties": {
                "type": {"enum": VERBS},
                "actor": {
                    "type": "object",
                    "required": ["id"],
                    "properties": {"id": {"type": "string", "minLength": 1}}
                }
            },
            "allOf": [
                {
                    // Verbs aimed at a room or contact need to say which.
                    "if": {"properties": {"type": {"enum": [
                        "join", "leave", "send", "request-friend", "remove-friend",
                        "make-friend", "query"
                    ]}}},
                    "then": {
                        "required": ["target"],
                        "properties": {"target": {
                            "type": "object",
                            "required": ["id", "type"],
                            "properties": {"id": {"type": "string", "minLength": 1}}
                        }}
                    }
                },
                {
                    "if": {"properties": {"type": {"const": "send"}}},
                    "then": {
                        "required": ["object"],
                        "properties": {"object": {
                            "type": "object",
                            "required": ["type", "content"],
                            "properties": {
                                "content": {"type": "string"},
                                "id": {"type": "string"},
                                "xmpp:replace": {
                                    "type": "object",
                                    "required": ["id"],
                                    "properties": {"id": {"type": "string", "minLength": 1}}
                                }
                            }
                        }}
                    }
                },
                {
                    "if": {"properties": {"type": {"const": "update"}}},
                    "then": {
                        "required": ["object"],
                        "properties": {"object": {
                            "type": "object",
                            "required": ["type"],
                            "properties": {
                                "type": {"const": "presence"},
                                "presence": {"enum": ["online", "away", "chat", "dnd", "xa", "offline"]},
                                "content": {"type": "string"}
                            }
                        }}
                    }
                },
                {
                    "if": {"properties": {"type": {"const": "query"}}},
                    "then": {
                        "properties": {"object": {
                            "type": "object",
                            "properties": {"type": {"enum": ["attendance", "room-info"]}}
                        }}
                    }
                }
            ]
        }),
        credentials: json!({
            "required": ["object"],
            "properties": {
                "actor": {"type": "object", "required": ["id"]},
                "object": {
                    "type": "object",
                    "required": ["type", "userAddress", "resource", "password"],
                    "additionalProperties": false,
                    "properties": {
                        "type": {"type": "string"},
                        "userAddress": {"type": "string", "minLength": 3},
                        "password": {"type": "string"},
                        "resource": {"type": "string"},
                        "server": {"type": "string", "minLength": 1},
                        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                        "directTls": {"type": "boolean"}
                    }
                }
            }
        }),
        require_credentials: vec!["connect"],
        persist: true,
        concurrency: 1,
    }
}
