from __future__ import annotations

from django.urls import path

from projects import inline_checks, views
from projects.publishing import views as publish_views
from projects.runs import listing
from projects.runs import views as run_views

app_name = "projects"

urlpatterns = [
    path("", views.project_list, name="list"),
    path("new/", views.project_new, name="new"),
    path("check-output-dir/", inline_checks.output_dir_inline, name="check-output-dir"),
    path("check-dataset/", inline_checks.check_dataset, name="check-dataset"),
    path("check-eval-dataset/", inline_checks.check_eval_dataset, name="check-eval-dataset"),
    path("check-hyperparameter/<str:name>/", inline_checks.check_hyperparameter, name="check-hyperparameter"),
    path("follow-output-dir/", views.follow_output_dir, name="follow-output-dir"),
    path("upload-dataset/", inline_checks.upload_dataset, name="upload-dataset"),
    path("token-count/", inline_checks.token_count, name="token-count"),
    path("<int:pk>/", views.project_detail, name="detail"),
    path("<int:pk>/edit/", views.project_edit, name="edit"),
    path("<int:pk>/delete/", views.project_delete, name="delete"),
    path("<int:pk>/start/", run_views.run_start, name="start"),
    path("runs/", listing.run_list, name="runs"),
    path("runs/compare/", listing.run_compare, name="compare"),
    path("runs/<int:pk>/", run_views.run_detail, name="run"),
    path("runs/<int:pk>/log/", listing.run_log, name="run-log"),
    path("runs/<int:pk>/cancel/", run_views.run_cancel, name="cancel"),
    path("runs/<int:pk>/publish/", publish_views.run_publish, name="publish"),
    path("runs/<int:pk>/adapter.tar.gz", publish_views.run_adapter, name="adapter"),
    path("published/<int:pk>/unpublish/", publish_views.published_unpublish, name="unpublish"),
]
