"""Frontends: ONNX models in, IR graphs out (`import_onnx`)."""

from __future__ import annotations

from ocrc.frontend.onnx_import import import_onnx, supported_ops

__all__ = ["import_onnx", "supported_ops"]
