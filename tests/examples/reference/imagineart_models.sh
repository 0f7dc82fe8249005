curl https://api.ml.imagine.art/v1/models \
  -H "Authorization: Bearer $IMAGINEART_TOKEN"
