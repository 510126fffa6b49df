mod github_app;
mod gitlab;
