"""Deployment: the local stack launcher (`make run`, test fixtures), compose and Kubernetes files."""
