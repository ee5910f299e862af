"""Kubernetes: which pod (namespace, name, container) holds each GPU, from the kubelet's PodResources API."""
