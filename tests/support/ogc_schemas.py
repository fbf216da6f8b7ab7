"""JSON Schemas of the OGC API - Processes - Part 1: Core 1.0 documents (OGC 18-062r2).

Written here from the standard's schema definitions (landingPage, confClasses, link,
processSummary, process, inputDescription, outputDescription, processList, statusInfo, jobList,
exception); no validator package ships them, and the standard's own YAML files are split over
many `$ref`'d files of OpenAPI 3.0 dialect. `validate(name, document)` checks a document with
`jsonschema` (Draft 2020-12, formats checked).
"""

from __future__ import annotations

from typing import Any

import jsonschema

_LINK = {
    "type": "object",
    "required": ["href"],
    "properties": {
        "href": {"type": "string", "format": "uri"},
        "rel": {"type": "string"},
        "type": {"type": "string"},
        "hreflang": {"type": "string"},
        "title": {"type": "string"},
    },
}
_LINKS = {"type": "array", "items": {"$ref": "#/$defs/link"}}

_DESCRIPTION_TYPE = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "description": {"type": "string"},
        "keywords": {"type": "array", "items": {"type": "string"}},
        "metadata": {"type": "array", "items": {"type": "object"}},
        "additionalParameters": {"type": "object"},
    },
}

_PROCESS_SUMMARY = {
    "allOf": [
        {"$ref": "#/$defs/descriptionType"},
        {
            "type": "object",
            "required": ["id", "version"],
            "properties": {
                "id": {"type": "string"},
                "version": {"type": "string"},
                "jobControlOptions": {
                    "type": "array",
                    "items": {"enum": ["sync-execute", "async-execute", "dismiss"]},
                },
                "outputTransmission": {
                    "type": "array",
                    "items": {"enum": ["value", "reference"]},
                },
                "links": _LINKS,
            },
        },
    ]
}

_INPUT_DESCRIPTION = {
    "allOf": [
        {"$ref": "#/$defs/descriptionType"},
        {
            "type": "object",
            "required": ["schema"],
            "properties": {
                "schema": {"type": "object"},
                "minOccurs": {"type": "integer", "minimum": 0},
                "maxOccurs": {"oneOf": [{"type": "integer", "minimum": 1}, {"const": "unbounded"}]},
            },
        },
    ]
}

_OUTPUT_DESCRIPTION = {
    "allOf": [
        {"$ref": "#/$defs/descriptionType"},
        {"type": "object", "required": ["schema"], "properties": {"schema": {"type": "object"}}},
    ]
}

_STATUS_INFO = {
    "type": "object",
    "required": ["jobID", "status", "type"],
    "properties": {
        "processID": {"type": "string"},
        "type": {"enum": ["process"]},
        "jobID": {"type": "string"},
        "status": {"enum": ["accepted", "running", "successful", "failed", "dismissed"]},
        "message": {"type": "string"},
        "created": {"type": "string", "format": "date-time"},
        "started": {"type": "string", "format": "date-time"},
        "finished": {"type": "string", "format": "date-time"},
        "updated": {"type": "string", "format": "date-time"},
        "progress": {"type": "integer", "minimum": 0, "maximum": 100},
        "links": _LINKS,
    },
}

_DEFS = {
    "link": _LINK,
    "descriptionType": _DESCRIPTION_TYPE,
    "processSummary": _PROCESS_SUMMARY,
    "inputDescription": _INPUT_DESCRIPTION,
    "outputDescription": _OUTPUT_DESCRIPTION,
    "statusInfo": _STATUS_INFO,
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "landingPage": {
        "type": "object",
        "required": ["links"],
        "properties": {
            "title": {"type": "string"},
            "description": {"type": "string"},
            "links": _LINKS,
        },
    },
    "confClasses": {
        "type": "object",
        "required": ["conformsTo"],
        "properties": {"conformsTo": {"type": "array", "items": {"type": "string"}}},
    },
    "processList": {
        "type": "object",
        "required": ["processes", "links"],
        "properties": {
            "processes": {"type": "array", "items": {"$ref": "#/$defs/processSummary"}},
            "links": _LINKS,
        },
    },
    "process": {
        "allOf": [
            {"$ref": "#/$defs/processSummary"},
            {
                "type": "object",
                "properties": {
                    "inputs": {
                        "type": "object",
                        "additionalProperties": {"$ref": "#/$defs/inputDescription"},
                    },
                    "outputs": {
                        "type": "object",
                        "additionalProperties": {"$ref": "#/$defs/outputDescription"},
                    },
                },
            },
        ]
    },
    "statusInfo": {"$ref": "#/$defs/statusInfo"},
    "jobList": {
        "type": "object",
        "required": ["jobs", "links"],
        "properties": {
            "jobs": {"type": "array", "items": {"$ref": "#/$defs/statusInfo"}},
            "links": _LINKS,
        },
    },
    "exception": {
        "type": "object",
        "required": ["type"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
        },
        "additionalProperties": True,
    },
}


def validate(name: str, document: Any) -> None:
    """Raise `jsonschema.ValidationError` unless `document` is a valid OGC `name` document."""
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$defs": _DEFS}
    schema.update(SCHEMAS[name])
    jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(document)
