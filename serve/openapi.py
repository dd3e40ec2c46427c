"""The OpenAPI 3 document of the routes in serve.app, written out (tests check that it names
every route the app has, and nothing else), with the bounds of serve.limits in it."""

from __future__ import annotations

from core import __version__
from core.formats import ASSET_EXTENSIONS
from serve import limits

_ERROR = {"$ref": "#/components/responses/Error"}
_ASSET_ID = {"name": "asset_id", "in": "path", "required": True,
             "description": "an asset's id, as search hits give it", "schema": {"type": "integer", "minimum": 0}}
_K = {"name": "k", "in": "query", "description": "how many hits",
      "schema": {"type": "integer", "minimum": 1, "maximum": limits.MAX_K, "default": limits.DEFAULT_K}}
_FILTERS = [
    {"name": "format", "in": "query", "description": "only this file format; repeat for several",
     "schema": {"type": "array", "items": {"type": "string", "enum": sorted(e.lstrip(".") for e in ASSET_EXTENSIONS)}},
     "style": "form", "explode": True},
    {"name": "folder", "in": "query", "description": "only assets under this folder (absolute, as hits show it)",
     "schema": {"type": "string", "maxLength": limits.MAX_FOLDER_CHARS}},
    {"name": "tag", "in": "query", "description": "only assets with this tag (a person's or a predicted one); "
                                                  "repeat to need several",
     "schema": {"type": "array", "maxItems": limits.MAX_FILTER_TAGS,
                "items": {"type": "string", "maxLength": limits.MAX_TAG_CHARS}}, "style": "form", "explode": True},
]
_HITS = {"200": {"description": "hits, best first",
                 "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Hits"}}}},
         "400": _ERROR, "404": _ERROR, "409": _ERROR}


def openapi_document() -> dict:
    return {
        "openapi": "3.0.3",
        "info": {"title": "ulip2 library server", "version": __version__,
                 "description": "One ulip2 asset library: search by text, by an indexed asset or by an uploaded "
                                "mesh, asset records, "
                                "thumbnails, a person's tags. Reads need no token; writes need the server's bearer "
                                "token. Every error is a JSON body {\"error\": message}."},
        "paths": {
            "/v1/status": {"get": {
                "summary": "the library at a glance: counts, bundle, last index",
                "responses": {"200": {"description": "status", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Status"}}}}}}},
            "/v1/tags": {"get": {
                "summary": "every label a tag filter can use (predicted tags and a person's own)",
                "responses": {"200": {"description": "the labels, sorted", "content": {"application/json": {
                    "schema": {"type": "object", "properties": {"tags": {
                        "type": "array", "items": {"type": "string"}}}}}}}}}},
            "/v1/search": {"get": {
                "summary": "assets by text",
                "parameters": [{"name": "q", "in": "query", "required": True, "description": "what to look for, in words",
                                "schema": {"type": "string", "maxLength": limits.MAX_QUERY_CHARS}}, _K, *_FILTERS],
                "responses": _HITS}},
            "/v1/like/{asset_id}": {"get": {
                "summary": "assets like an indexed one, itself left out",
                "parameters": [_ASSET_ID, _K, *_FILTERS], "responses": _HITS}},
            "/v1/search/mesh": {"post": {
                "summary": "assets like an uploaded mesh file",
                "parameters": [{"name": "type", "in": "query", "required": True, "description": "the file's type",
                                "schema": {"type": "string", "enum": list(limits.UPLOAD_TYPES)}}, _K, *_FILTERS],
                "requestBody": {"required": True, "description": f"the file's bytes, {limits.MAX_MESH_BYTES} at most",
                                "content": {"application/octet-stream": {"schema": {"type": "string",
                                                                                    "format": "binary"}}}},
                "responses": _HITS | {"413": _ERROR, "415": _ERROR, "422": _ERROR}}},
            "/v1/search/image": {"post": {
                "summary": "assets like an uploaded picture (bundles in an openclip space)",
                "parameters": [_K, *_FILTERS],
                "requestBody": {"required": True, "description": f"a PNG, JPEG or WebP file, {limits.MAX_IMAGE_BYTES} "
                                                                 f"bytes and {limits.MAX_IMAGE_PIXELS} pixels at most",
                                "content": {"application/octet-stream": {"schema": {"type": "string",
                                                                                    "format": "binary"}}}},
                "responses": _HITS | {"413": _ERROR, "422": _ERROR}}},
            "/v1/assets/{asset_id}": {"get": {
                "summary": "one asset's record",
                "parameters": [_ASSET_ID],
                "responses": {"200": {"description": "the asset", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Asset"}}}}, "404": _ERROR}}},
            "/v1/assets/{asset_id}/thumbnail": {"get": {
                "summary": "the asset's thumbnail",
                "parameters": [_ASSET_ID],
                "responses": {"200": {"description": "a PNG", "content": {"image/png": {
                    "schema": {"type": "string", "format": "binary"}}}}, "404": _ERROR}}},
            "/v1/assets/{asset_id}/tags": {"put": {
                "summary": "replace a person's tags of one asset",
                "security": [{"bearer": []}],
                "parameters": [_ASSET_ID],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["tags"], "additionalProperties": False,
                    "properties": {"tags": {"type": "array", "maxItems": limits.MAX_TAGS, "items": {
                        "type": "string", "minLength": 1, "maxLength": limits.MAX_TAG_CHARS}}}}}}},
                "responses": {"200": {"description": "the tags as stored (each once, sorted)", "content": {
                    "application/json": {"schema": {"type": "object", "properties": {
                        "asset_id": {"type": "integer"},
                        "user_tags": {"type": "array", "items": {"type": "string"}}}}}}},
                    "400": _ERROR, "401": _ERROR, "403": _ERROR, "404": _ERROR, "413": _ERROR, "415": _ERROR}}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "the content of the server's --token-file"}},
            "responses": {"Error": {"description": "what was wrong and how to fix it", "content": {
                "application/json": {"schema": {"type": "object", "required": ["error"],
                                                "properties": {"error": {"type": "string"}}}}}}},
            "schemas": {
                "Hit": {"type": "object", "properties": {
                    "asset_id": {"type": "integer"}, "path": {"type": "string"}, "object": {"type": "string"},
                    "format": {"type": "string"}, "folder": {"type": "string"},
                    "score": {"type": "number", "description": "cosine similarity in the bundle's space"}}},
                "Hits": {"type": "object", "properties": {
                    "query": {"type": "string"}, "like": {"type": "integer"}, "mesh": {"type": "string"},
                    "image": {"type": "boolean"},
                    "k": {"type": "integer"},
                    "filters": {"type": "object"}, "bundle": {"type": "string"}, "space": {"type": "string"},
                    "hits": {"type": "array", "items": {"$ref": "#/components/schemas/Hit"}}}},
                "Asset": {"type": "object", "properties": {
                    "asset_id": {"type": "integer"}, "path": {"type": "string"}, "object": {"type": "string"},
                    "folder": {"type": "string"}, "format": {"type": "string"}, "size": {"type": "integer"},
                    "sha256": {"type": "string"}, "embedded": {"type": "boolean"},
                    "user_tags": {"type": "array", "items": {"type": "string"}},
                    "tags": {"type": "array", "items": {"type": "object", "properties": {
                        "tag": {"type": "string"}, "score": {"type": "number"}}}},
                    "captions": {"type": "array", "items": {"type": "object", "properties": {
                        "caption": {"type": "string"}, "score": {"type": "number"}}}},
                    "has_thumbnail": {"type": "boolean"},
                    "thumbnail_source": {"type": "string", "nullable": True, "enum": ["points", "blender", None]}}},
                "Status": {"type": "object", "properties": {
                    "service": {"type": "string"}, "version": {"type": "string"},
                    "library": {"type": "string", "description": "the library file's name"},
                    "bundle": {"type": "object", "properties": {
                        "id": {"type": "string"}, "space": {"type": "string"}, "dim": {"type": "integer"}}},
                    "assets": {"type": "integer"}, "embedded": {"type": "integer"},
                    "errors": {"type": "integer"}, "thumbnails": {"type": "integer"},
                    "last_indexed": {"type": "string", "format": "date-time", "nullable": True},
                    "writes": {"type": "string", "enum": ["token", "off"]}}},
            },
        },
    }
