mod github_app;
